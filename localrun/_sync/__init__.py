"""Sync: push runs to a remote later (DESIGN §8). Imported only by the sync commands, never by
``import localrun``: remotes pull in HTTP and object-store clients."""
