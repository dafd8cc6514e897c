"""remotecache"""
