# Packages: make package builds dist/*.deb and dist/*.rpm with nfpm (pinned at v2.44.0: later releases need a module the proxy here does not serve;
# installed with go install so its dependencies stay out of our go.mod);
# make package-check lints them and tests install and upgrade.
NFPM_VERSION := v2.44.0
NFPM := $(shell go env GOPATH)/bin/nfpm
PKG_VERSION ?= $(shell packaging/version.sh)
PKG_ARCH ?= $(shell go env GOARCH)

.PHONY: package package-check package-boot-test

# Package binaries are dynamically linked PIEs, as Debian's hardening and
# lintian expect of a daemon (bin/ keeps the static build for the testbed).
PKG_LDFLAGS := -s -w -X github.com/meshd/meshd/internal/version.Version=$(PKG_VERSION)

package: $(NFPM)
	@mkdir -p dist/build
	CGO_ENABLED=1 $(GO) build -trimpath -buildmode=pie -ldflags '$(PKG_LDFLAGS)' -o dist/build/meshd ./cmd/meshd
	CGO_ENABLED=1 $(GO) build -trimpath -buildmode=pie -ldflags '$(PKG_LDFLAGS)' -o dist/build/meshctl ./cmd/meshctl
	dist/build/meshctl completion bash > dist/build/meshctl.bash
	packaging/mkman.sh dist/build/meshd dist/build/meshd.8.gz
	packaging/mkman.sh dist/build/meshctl dist/build/meshctl.8.gz
	gzip -9n < packaging/changelog.Debian > dist/build/changelog.Debian.gz
	PKG_VERSION=$(PKG_VERSION) PKG_ARCH=$(PKG_ARCH) $(NFPM) package -f packaging/nfpm.yaml -p deb -t dist/
	{ cat packaging/nfpm.yaml; echo "changelog: packaging/changelog.yml"; } > dist/build/nfpm-rpm.yaml
	PKG_VERSION=$(PKG_VERSION) PKG_ARCH=$(PKG_ARCH) $(NFPM) package -f dist/build/nfpm-rpm.yaml -p rpm -t dist/
	@ls -l dist/*.deb dist/*.rpm

$(NFPM):
	$(GO) install github.com/goreleaser/nfpm/v2/cmd/nfpm@$(NFPM_VERSION)

package-check:
	bash packaging/check.sh

# The .deb on a booted systemd (packaging/boottest): a Debian 12 rootfs built
# once with debootstrap into BOOT_ROOTFS (outside the source tree, keyed by
# rootfs.sh's recipe; built when missing), booted with systemd-nspawn inside
# a testbed namespace; the package installed with apt-get, meshd started
# under the shipped unit, its names routed by systemd-resolved, restarted,
# upgraded to UPGRADE_VERSION, stopped and purged. Root; after make package.
# About 2 minutes with the rootfs cached.
BOOT_ROOTFS ?= /var/cache/meshd-test/rootfs-$(shell packaging/boottest/rootfs.sh --key)
UPGRADE_VERSION := 99.0.0
package-boot-test: build
	@need=(); for t in systemd-nspawn:systemd-container debootstrap:debootstrap; do \
		command -v $${t%%:*} >/dev/null || need+=($${t#*:}); done; \
	if [ $${#need[@]} -gt 0 ]; then apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$${need[@]}" >/dev/null; fi
	packaging/boottest/rootfs.sh $(BOOT_ROOTFS)
	@# The upgrade is built from the same tree every run: a cached one would
	@# test yesterday's scripts.
	rm -rf dist/upgrade && $(MAKE) -s package PKG_VERSION=$(UPGRADE_VERSION) >/dev/null && mkdir -p dist/upgrade && \
		mv dist/meshd_$(UPGRADE_VERSION)-1_*.deb dist/meshd-$(UPGRADE_VERSION)-1.*.rpm dist/upgrade/
	$(GO) run ./packaging/boottest -rootfs $(BOOT_ROOTFS) -bin bin \
		-deb dist/meshd_$(PKG_VERSION)-1_$(PKG_ARCH).deb -upgrade dist/upgrade/meshd_$(UPGRADE_VERSION)-1_$(PKG_ARCH).deb
