"""The web side (FastAPI): the health check, sign-up and confirmation, leaving,
tracked clicks and opens, the provider's and the checkouts' webhooks, the
ingest API, ``/metrics``, and the admin pages with their JSON
(``nurture.web.admin``). ``app.create_app`` puts them together."""
