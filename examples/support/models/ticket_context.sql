-- the 3 articles nearest to each ticket (cosine similarity of their embeddings), in one text for the prompt
{{ config(materialized='table') }}
with hits as (
    {{ nearest_neighbors(ref('ticket_embeddings'), ref('kb_embeddings'), k=3, query_key='ticket_id',
                         document_key='article_id') }}
)
select t.ticket_id, t.subject, t.body,
       list(k.article_id order by h.neighbor_rank) as retrieved_ids,
       string_agg('[' || k.article_id || '] ' || k.title || ': ' || k.body, chr(10) order by h.neighbor_rank)
           as context
from {{ ref('stg_tickets') }} t
join hits h on h.ticket_id = t.ticket_id
join {{ ref('stg_kb_articles') }} k on k.article_id = h.article_id
group by t.ticket_id, t.subject, t.body
