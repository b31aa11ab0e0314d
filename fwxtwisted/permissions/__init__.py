"""Sessions and the permissions they grant: TCP and UDP redirects, joins, their runtime."""
