"""Conversations: the turns before a question, which its answer and its retrieval read (follow_up.py), and
the conversations a user keeps, to continue, list and delete (saved.py)."""
