-- Per-product sentiment summary over the answered reviews (current and stale answers).
with insights as (

    select *
    from {{ ref('review_insights') }}
    where _llmt_status in ('ok', 'stale')

),

ranked_categories as (

    select
        product,
        category,
        row_number() over (partition by product order by count(*) desc, category) as category_rank
    from insights
    where category is not null
    group by product, category

),

per_product as (

    select
        product,
        count(*)                                                          as review_count,
        round(avg(score), 2)                                              as avg_score,
        round(avg(case when sentiment = 'positive' then 1.0 else 0 end), 3) as share_positive,
        round(avg(case when sentiment = 'negative' then 1.0 else 0 end), 3) as share_negative,
        count(competitor_mentioned)                                       as competitor_mentions
    from insights
    group by product

)

select
    p.product,
    p.review_count,
    p.avg_score,
    p.share_positive,
    p.share_negative,
    c.category as top_category,
    p.competitor_mentions
from per_product as p
left join ranked_categories as c
    on c.product = p.product
    and c.category_rank = 1
order by p.product
