"""Least-cost routing: rate decks, number normalisation, ranked plans with reasons. Pure."""

from ._deck import DeckColumns, DeckError, Rate, RateDeck, load_deck
from ._number import NumberError, NumberRules, normalize
from ._plan import CarrierRoute, Choice, RouteRule, RoutingTable

__all__ = [
    "CarrierRoute",
    "Choice",
    "DeckColumns",
    "DeckError",
    "NumberError",
    "NumberRules",
    "Rate",
    "RateDeck",
    "RouteRule",
    "RoutingTable",
    "load_deck",
    "normalize",
]
