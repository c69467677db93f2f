"""Configuration: boards and recipes from TOML, validated against one table of settings."""

from .loader import (
           Board,
           Plan,
           Recipe,
           list_boards,
           list_recipes,
           load_board,
           load_plan,
           load_recipe,
)

__all__ = ["Board", "Plan", "Recipe", "list_boards", "list_recipes", "load_board", "load_plan",
           "load_recipe"]
