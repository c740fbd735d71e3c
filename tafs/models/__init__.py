"""Backbones: one interface (``backbone.Backbone``) over the toy model and real diffusers models."""
