-- every article a reply cites exists in the knowledge base. The answer schema lists the article ids as an
-- enum, so the model can only cite listed ids; but the enum still lists KB-013, an article that was retired.
-- Warn: `llmt export finetune` leaves the replies that fail this test out of the training data.
{{ config(severity='warn') }}
select a.ticket_id, c.article_id
from {{ ref('ticket_answers') }} a, unnest(a.cited_article_ids) as c(article_id)
where c.article_id not in (select article_id from {{ ref('stg_kb_articles') }})
