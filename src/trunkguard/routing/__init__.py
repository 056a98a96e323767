"""Least-cost routing: rate decks, number normalisation, ranked plans with reasons. Pure."""

from ._deck import DeckColumns, DeckError, Rate, RateDeck, load_deck
from ._explain import Explain
from ._index import Node, RouteIndex
from ._number import NumberError, NumberRules, normalize
from ._plan import CarrierRoute, Choice, RouteRule, RoutingTable
from ._planner import HealthView, QualityView, build_plan
from ._pool import PoolMember, ServerPool
from ._target import CARRIER, POOL_MEMBER, Addr, Flow, Plan, Target, TlsClient

__all__ = [
    "CARRIER",
    "POOL_MEMBER",
    "Addr",
    "CarrierRoute",
    "Choice",
    "DeckColumns",
    "DeckError",
    "Explain",
    "Flow",
    "HealthView",
    "Node",
    "NumberError",
    "NumberRules",
    "Plan",
    "PoolMember",
    "QualityView",
    "Rate",
    "RateDeck",
    "RouteIndex",
    "RouteRule",
    "RoutingTable",
    "ServerPool",
    "Target",
    "TlsClient",
    "build_plan",
    "load_deck",
    "normalize",
]
