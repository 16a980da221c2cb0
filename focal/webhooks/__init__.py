"""Outgoing webhooks: tenants' endpoints, signed deliveries with retries, recorded attempts.

- ``models.py``: ``WebhookEndpoint`` (url, event types, the signing secret) and ``WebhookDelivery``
  (one event to one endpoint: its exact body, status, attempts, lease);
- ``store.py`` (interface), ``inmemory.py``, ``postgres.py``: where they are kept;
- ``signing.py``: the signature (the Standard Webhooks scheme: HMAC-SHA256), for senders and
  receivers;
- ``dispatcher.py``: emits events after the turn that caused them is persisted and delivers them
  in the background, with bounded retries, every attempt recorded.
"""
