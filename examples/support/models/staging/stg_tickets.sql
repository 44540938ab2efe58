select ticket_id, customer, subject, body, created_at
from {{ source('support', 'tickets') }}
where trim(body) <> ''
