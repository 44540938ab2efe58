-- Every answered review is counted exactly once in product_sentiment.
-- A singular test: it returns the failing rows (here, the products whose counts disagree).
with answered as (

    select product, count(*) as answered_reviews
    from {{ ref('review_insights') }}
    where _llmt_status in ('ok', 'stale')
    group by product

)

select
    coalesce(a.product, p.product) as product,
    a.answered_reviews,
    p.review_count
from answered as a
full outer join {{ ref('product_sentiment') }} as p
    on p.product = a.product
where a.answered_reviews is distinct from p.review_count
