"""Carrier host names resolved per RFC 3263 (NAPTR, SRV, A/AAAA), in the background.

``_rfc3263`` holds the rules as pure functions of DNS answers; ``_resolver`` asks a DNS
server for them with dnspython; ``_watcher`` keeps each carrier's destinations fresh at its
TTL on the running loop and reports changes. Nothing here runs on the call path.
"""
