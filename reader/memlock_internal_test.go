package reader

import "testing"

func TestChargesMemlock(t *testing.T) {
	for release, want := range map[string]bool{
		"5.8.0-1-amd64":         true,
		"5.10.0-28-cloud-arm64": true,
		"5.11.0":                false,
		"6.1.0-27-cloud-amd64":  false,
		"6.18.44":               false,
		"4.19.0":                true,
		"garbage":               true,
		"":                      true,
	} {
		if got := chargesMemlock(release); got != want {
			t.Errorf("chargesMemlock(%q) = %v, want %v", release, got, want)
		}
	}
}
