-- A plain SQL model (a view, from the folder config in project.yml): clean the raw tickets.
select
    cast(ticket_id as integer) as ticket_id,
    trim(subject)              as subject,
    trim(body)                 as body
from {{ source('raw', 'tickets') }}
where body is not null
