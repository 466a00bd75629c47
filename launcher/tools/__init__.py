"""The operator's commands: short-lived processes of their own, never resident."""
