package writer_test

import (
	"testing"

	"github.com/semundo/semundo/internal/holder"
)

func TestMain(m *testing.M) { holder.Main(m) }
