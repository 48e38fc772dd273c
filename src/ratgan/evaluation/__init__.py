"""ratgan.evaluation"""
