"""The transfer service: "move this data set there" as one HTCondor job per transfer.

- :mod:`~lark.transfer.endpoints`: the admin's endpoints file (named storage endpoints);
- :mod:`~lark.transfer.model`: a client's request, checked field by field;
- :mod:`~lark.transfer.jobs`: the job a transfer becomes and the state read back from its ad;
- :mod:`~lark.transfer.schedd`: the edge to the schedd, as the requesting user (their own token);
- :mod:`~lark.transfer.service`: ``lark-transferd``, the REST API and web page (extra ``[transfer]``).

Everything but the schedd edge and the service is pure.
"""

from lark.transfer.endpoints import Endpoint, EndpointError, load_endpoints, parse_endpoints
from lark.transfer.jobs import STATES, TERMINAL, Movers, submit_description, transfer_state, transfer_view
from lark.transfer.model import TransferRequest, TransferRequestError, validate

__all__ = ["STATES", "TERMINAL", "Endpoint", "EndpointError", "Movers", "TransferRequest", "TransferRequestError",
           "load_endpoints", "parse_endpoints", "submit_description", "transfer_state", "transfer_view", "validate"]
