"""Exports of trained models for serving and mobile runtimes."""
