# Packages: make package builds dist/*.deb and dist/*.rpm with nfpm (pinned at v2.44.0: later releases need a module the proxy here does not serve;
# installed with go install so its dependencies stay out of our go.mod);
# make package-check lints them and tests install and upgrade.
NFPM_VERSION := v2.44.0
NFPM := $(shell go env GOPATH)/bin/nfpm
PKG_VERSION ?= $(shell packaging/version.sh)
PKG_ARCH ?= $(shell go env GOARCH)

.PHONY: package package-check

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
	PKG_VERSION=$(PKG_VERSION) PKG_ARCH=$(PKG_ARCH) $(NFPM) package -f packaging/nfpm.yaml -p rpm -t dist/
	@ls -l dist/*.deb dist/*.rpm

$(NFPM):
	$(GO) install github.com/goreleaser/nfpm/v2/cmd/nfpm@$(NFPM_VERSION)

package-check:
	bash packaging/check.sh
