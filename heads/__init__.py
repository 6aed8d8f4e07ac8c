"""Multi-task heads on one shared minilm encoder pass."""
