"""Wire formats shared by a client and its server, so the two ends cannot drift apart.

* :mod:`.ssh`: the SSH transport's frames, listings and error fields (spec/SPEC-SSH.md);
* :mod:`.http`: the HTTP status <-> error class table (spec/SPEC-HTTP.md).

Modules here import only the core (errors, hashes, refs, urls), never a transport or a
server.
"""
