# A click on the needle's click point reaches the guest through the USB
# tablet; testos' pointer-events prints the tablet's reports on the serial
# port.
use base 'basetest';
use strict;
use warnings;
use testapi;

# wait_serial gives what the guest wrote up to the match: the last
# report is the one awaited. Backends map a pixel to the tablet's 0–32767
# a little differently (by the width, or the width less one): two pixels
# of slack.
sub near {
    my ($output, $x, $y) = @_;
    my @at = $output =~ /pointer x=(\d+) y=(\d+)/g or die "no pointer report in: $output";
    my ($gx, $gy) = @at[-2, -1];
    die "the guest saw x=$gx y=$gy, want x=$x y=$y" if abs($gx - $x) > 120 || abs($gy - $y) > 170;
}

sub run {
    assert_script_run '(pointer-events > /dev/ttyS0 &)';
    wait_serial('pointer-events: reading', 30) or die 'the guest has no USB tablet';
    assert_and_click 'clickme';
    wait_serial(qr/pointer x=\d+ y=\d+ left=1/, 30) or die 'the click never reached the guest';
    mouse_set(700, 390);
    mouse_click('right');
    near(wait_serial(qr/pointer x=\d+ y=\d+ left=0 right=1/, 30), 31901, 32027);
    mouse_hide;
    # The bottom right pixel.
    near(wait_serial(qr/pointer x=32[67]\d\d y=32[67]\d\d/, 30), 32767, 32767);
}

1;
