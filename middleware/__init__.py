"""Cross-cutting behaviour, one concern per module, tuned per actor through actor options.

``broker.py`` installs the stack in one place; see ``middleware_stack`` there for the order.
"""
