#!/bin/sh
# mkman.sh BIN OUT.8.gz: a man page from a kong CLI's own --help, so the
# page never lags behind the commands.
set -eu
bin=$1 out=$2
name=$(basename "$bin")
version=$("$bin" version 2>/dev/null | awk '{print $2}')
esc() { sed -e 's/\\/\\\\/g' -e 's/^\./\\\&./' -e "s/^'/\\\\\&'/"; }
{
	printf '.TH %s 8 "%s" "%s %s" "System Administration"\n' "$(echo "$name" | tr a-z A-Z)" "$(date -u +%Y-%m-%d)" "$name" "${version:-dev}"
	printf '.SH NAME\n%s \\- %s\n' "$name" "$("$bin" --help | sed -n '3p' | esc)"
	printf '.SH SYNOPSIS\n.nf\n'
	"$bin" --help | esc
	printf '.fi\n.SH COMMANDS\n'
	for cmd in $("$bin" --help | awk '/^Commands:/{on=1; next} on && /^  [a-z]/{print $1}' | sort -u); do
		printf '.SS %s\n.nf\n' "$cmd"
		"$bin" "$cmd" --help 2>/dev/null | esc || true
		printf '.fi\n'
	done
	printf '.SH SEE ALSO\nmeshd(8), meshctl(8), wg(8)\n'
} | gzip -9n > "$out"
