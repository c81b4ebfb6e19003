"""A personal HTCondor pool with Lark on one machine, for the demo and the end-to-end tests.

* :mod:`lark.pool.image` - the cached Debian image with HTCondor (built once);
* :mod:`lark.pool.node` - one node: an overlay of the image, its mounts, network namespace and master;
* :mod:`lark.pool.sites` - the multi-site layout: WAN, site routers and data servers, shaped site links;
* :mod:`lark.pool.install` - Lark installed by the admin guide's own marked blocks;
* :mod:`lark.pool.personal` - a named pool (``lark pool up/exec/list/status/down``).

Everything here runs as root and only in namespaces and directories it creates and names after the pool.
"""
