"""Shipped recipes: importable Python files, each defining ``recipe``; leaf recipes edit a base one."""
