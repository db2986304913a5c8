"""Rasa action server: banking skills, forms and step-up verification, on the shared core."""
