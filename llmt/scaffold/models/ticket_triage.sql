{{ config(materialized='llm', prompt='ticket_triage', output_schema='ticket_triage', unique_key='ticket_id') }}

-- An LLM model: each row is rendered through prompts/ticket_triage.md and answered following
-- schemas/ticket_triage.yml. The output table has these columns plus urgency, team and summary.
select ticket_id, subject, body
from {{ ref('stg_tickets') }}
