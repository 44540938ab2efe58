"""The warehouse: DuckDB connections and llmt's state tables."""
