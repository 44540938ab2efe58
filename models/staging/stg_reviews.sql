-- Cleaned reviews: one row per review, typed columns, blank texts as NULL.
-- Rows with an empty text are kept (length 0) unless var('min_review_chars') is above 0.
with source as (

    select * from {{ source('raw', 'reviews') }}

),

cleaned as (

    select
        cast(review_id as bigint)                                          as review_id,
        trim(cast(product as varchar))                                     as product,
        cast(rating as integer)                                            as rating,
        lower(trim(cast(language as varchar)))                             as language,
        -- trim() only strips spaces; also strip tabs and newlines, then blank -> NULL
        nullif(regexp_replace(cast(review_text as varchar), '^\s+|\s+$', '', 'g'), '') as review_text,
        cast(created_at as date)                                           as created_at
    from source

)

select *
from cleaned
where coalesce(length(review_text), 0) >= {{ var('min_review_chars') }}
