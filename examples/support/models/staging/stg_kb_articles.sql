select article_id, title, body, updated_at
from {{ source('support', 'kb_articles') }}
