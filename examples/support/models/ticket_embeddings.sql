{{ config(materialized='embedding', column='text', unique_key='ticket_id', model='text-embedding-3-small',
          dimensions=512) }}
select ticket_id, subject || '. ' || body as text from {{ ref('stg_tickets') }}
