"""The stages of the loop as plain classes (the Ray actors in actors/ are thin shells)."""
