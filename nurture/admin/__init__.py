"""Services for admins: who may log in (:mod:`nurture.admin.users`) and what
they see and do. Like the other services they take a session or engine and
plain values and return data; the pages (``nurture.web.admin``), the JSON API
and the commands are edges over them."""
