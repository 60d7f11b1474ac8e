"""Trainers: one module per learner family; each fits one configuration and reports."""
