{{ config(materialized='llm', prompt='review_analysis', output_schema='review_analysis', unique_key='review_id') }}

-- One LLM request per review with text. Identical texts are asked once and fanned out.
select
    review_id,
    product,
    language,
    review_text
from {{ ref('stg_reviews') }}
where review_text is not null
