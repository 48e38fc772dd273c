"""ratgan.models"""
