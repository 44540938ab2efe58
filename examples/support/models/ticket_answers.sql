-- the retrieved context is an input of the prompt, so part of the request key: when the knowledge base
-- changes, exactly the tickets whose context changed are asked again
{{ config(materialized='llm', prompt='ticket_answer', output_schema='ticket_answer', unique_key='ticket_id') }}
select ticket_id, subject, body, context, retrieved_ids from {{ ref('ticket_context') }}
