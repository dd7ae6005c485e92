-- PSP webhooks arrive for the environment's PSP accounts and for merchants' own accounts
-- (`POST /v1/webhooks/{psp}/{merchant_id}`). An event is unique within the account that
-- signed it: one merchant, holding its own webhook secret, cannot sign an event id that
-- makes another account's real event a "duplicate". `account` is '' for the environment's
-- accounts, else the merchant id whose secret verified the event.
ALTER TABLE webhook_events ADD COLUMN account text NOT NULL DEFAULT '';
ALTER TABLE webhook_events DROP CONSTRAINT webhook_events_psp_event_id_key;
ALTER TABLE webhook_events ADD CONSTRAINT webhook_events_account_event
    UNIQUE (psp, account, event_id);
