"""ratgan.turing"""
