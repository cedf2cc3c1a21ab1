"""The neurocyte command."""
