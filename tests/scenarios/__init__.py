"""Whole-receiver scenarios: durability, kills, power loss, fuzzing, slow and many peers."""
