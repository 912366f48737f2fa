"""Agents, mixers and the centralized information they condition on."""
