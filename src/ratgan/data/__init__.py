"""ratgan.data"""
