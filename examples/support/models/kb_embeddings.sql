-- one vector per knowledge base article: an edited article is embedded again, the others are not
{{ config(materialized='embedding', column='text', unique_key='article_id', model='text-embedding-3-small',
          dimensions=512) }}
select article_id, title || '. ' || body as text from {{ ref('stg_kb_articles') }}
