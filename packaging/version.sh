#!/bin/sh
# version.sh: the package version from git, valid for deb and rpm.
#   v1.2.3           -> 1.2.3
#   v1.2.3-4-gabc123 -> 1.2.3+git4.abc123
#   no tag           -> 0.0.0+git<count>.<sha>
#   no git           -> 0.0.0
# PKG_VERSION in the environment wins (used to build an upgrade in tests).
if [ -n "$PKG_VERSION" ]; then echo "$PKG_VERSION"; exit 0; fi
d=$(git describe --tags --long --match 'v[0-9]*' 2>/dev/null)
if [ -n "$d" ]; then
	echo "$d" | sed -E 's/^v//; s/-0-g[0-9a-f]+$//; s/-([0-9]+)-g([0-9a-f]+)$/+git\1.\2/'
	exit 0
fi
if sha=$(git rev-parse --short HEAD 2>/dev/null); then
	echo "0.0.0+git$(git rev-list --count HEAD).$sha"
	exit 0
fi
echo 0.0.0
