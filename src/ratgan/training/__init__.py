"""ratgan.training"""
