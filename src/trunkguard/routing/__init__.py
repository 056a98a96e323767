"""Least-cost routing: rate decks, number normalisation, ranked plans with reasons. Pure."""

from ._deck import DeckColumns, DeckError, Rate, RateDeck, load_deck
from ._number import NumberError, NumberRules, normalize
from ._plan import CarrierRoute, Choice, RouteRule, RoutingTable
from ._pool import PoolMember, ServerPool

__all__ = [
    "CarrierRoute",
    "Choice",
    "DeckColumns",
    "DeckError",
    "NumberError",
    "NumberRules",
    "PoolMember",
    "Rate",
    "RateDeck",
    "RouteRule",
    "RoutingTable",
    "ServerPool",
    "load_deck",
    "normalize",
]
