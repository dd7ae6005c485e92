-- Merchant webhooks still to be delivered: one row per delivery of an event to an endpoint (or
-- per redelivery asked for by people), written in the transaction that wrote the event, and
-- deleted when it is delivered, given up on or its endpoint is deleted. One workflow per
-- endpoint (`WebhookEndpointWorkflow`) delivers what is due, in passes; each try is still a
-- row of webhook_deliveries. (Before this, each delivery was a workflow of its own: three
-- workflow starts for every decline at a merchant with an endpoint.)
CREATE TABLE webhook_queue (
    id             text PRIMARY KEY,                        -- whq_...
    merchant_id    text NOT NULL,
    endpoint_id    text NOT NULL REFERENCES webhook_endpoints (id),
    event_id       text NOT NULL REFERENCES merchant_events (id) ON DELETE CASCADE,
    manual         boolean NOT NULL DEFAULT false,
    tries          integer NOT NULL DEFAULT 0,
    first_try_at   timestamptz,
    next_try_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    queued_at      timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX webhook_queue_due ON webhook_queue (endpoint_id, next_try_at, id);
CREATE INDEX webhook_queue_stalled ON webhook_queue (next_try_at);
