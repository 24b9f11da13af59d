"""The steering search: variants scored exactly on the prefix cache, selected by a rule written down first."""
