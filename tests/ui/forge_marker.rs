// Misuse: forging a state marker outside the crate (the markers have a private field).
fn main() {
    let _registered = ferrite_io::Registered(());
    let _in_flight = ferrite_io::InFlight(());
}
