"""Ops-tool clients: one small interface per tool kind, adapters chosen by the topology.

Runbooks talk to compute, service control, registry, traffic, metrics and config store
through the Protocols in ``interfaces.py``; ``toolbox.build_toolbox`` picks each tool's
adapter by the topology's ``adapter`` key. Every adapter reaches its tool through a
``ReplicatedEndpoint`` that prefers the local DC's replica and fails over to the others.
"""
